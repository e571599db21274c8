"""One error hierarchy for the gateway package."""


class GatewayError(Exception):
    """Base of every error the gateway raises."""


class SessionConfigError(GatewayError, ValueError):
    """A session was configured with a value outside its allowed range."""


class SessionStoreError(GatewayError):
    """The persistent session store could not be read or written."""


class NotLoggedOn(GatewayError):
    """An application message was sent on a session that is not logged on."""
