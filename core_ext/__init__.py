"""The compiled hot path: order books, matching, pre-trade risk and wire codecs.

No sockets, no asyncio, no logging and no floats in the book or the risk check:
prices are int64 ticks, quantities int64 lots. Imports nothing of ours.
"""
