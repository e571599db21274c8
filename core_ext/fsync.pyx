# cython: language_level=3, boundscheck=False, wraparound=False
"""A periodic fsync that never takes the GIL.

``engine.journal.Journal`` writes its records from the event loop's thread (after the
event) and must fsync them within ``fsync_interval_ms``. A Python thread doing that
wakes every few milliseconds and takes the GIL each time -- from the event loop, on the
order's path, and for milliseconds when the scheduler preempts it holding it. This
thread runs in C for its whole life: it sleeps, and when records were written since
the last fsync it calls ``fsync(2)`` and publishes how far the file is durable.

``Fsyncer(fd, interval_ns)`` takes its own duplicate of ``fd``; ``note_written(seq)``
after each write; ``synced`` is the last seq known durable; ``set_fd(fd)`` after the
file changed (segment rotation; the old one must be durable already); ``run()`` is the
thread's body (start it with ``threading.Thread(target=f.run)``); ``stop()`` ends it
after a last fsync; ``failed`` is the errno of a failed fsync (the thread then stops).
"""
from libc.errno cimport errno
from libc.stdint cimport int64_t
from posix.time cimport nanosleep, timespec
from posix.unistd cimport close, dup, fsync


cdef extern from *:
    """
    /* lock-free counters: the event loop's thread notes writes without ever waiting
       for an fsync in progress */
    static inline void eng_fsync_store(long long *p, long long v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
    static inline long long eng_fsync_load(long long *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
    static inline void eng_fsync_max(long long *p, long long v) {
        long long cur = __atomic_load_n(p, __ATOMIC_ACQUIRE);
        while (cur < v && !__atomic_compare_exchange_n(p, &cur, v, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {}
    }
    """
    void eng_fsync_store(long long* p, long long v) nogil
    long long eng_fsync_load(long long* p) nogil
    void eng_fsync_max(long long* p, long long v) nogil


cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_mutex_t:
        pass
    int pthread_mutex_init(pthread_mutex_t*, void*)
    int pthread_mutex_destroy(pthread_mutex_t*)
    int pthread_mutex_lock(pthread_mutex_t*)
    int pthread_mutex_unlock(pthread_mutex_t*)


cdef class Fsyncer:
    cdef pthread_mutex_t _lock
    cdef int _fd
    cdef int64_t _interval_ns
    cdef long long _written           # atomics (eng_fsync_*): never behind the lock
    cdef long long _synced
    cdef bint _stop
    cdef int _failed

    def __cinit__(self, int fd, int64_t interval_ns):
        if interval_ns < 100_000:
            raise ValueError(f"interval_ns {interval_ns}: at least 100 us")
        pthread_mutex_init(&self._lock, NULL)
        self._fd = dup(fd)
        if self._fd < 0:
            raise OSError(errno, "dup of the journal segment failed")
        self._interval_ns = interval_ns
        eng_fsync_store(&self._written, 0)
        eng_fsync_store(&self._synced, 0)
        self._stop = False
        self._failed = 0

    def __dealloc__(self):
        if self._fd >= 0:
            close(self._fd)
        pthread_mutex_destroy(&self._lock)

    def note_written(self, long long seq):
        """Records up to `seq` are written (in the page cache): fsync them soon."""
        eng_fsync_max(&self._written, seq)

    def mark_synced(self, long long seq):
        """Records up to `seq` were made durable by someone else (an explicit sync)."""
        eng_fsync_max(&self._synced, seq)

    @property
    def synced(self):
        return eng_fsync_load(&self._synced)

    @property
    def failed(self):
        return self._failed

    def set_fd(self, int fd):
        """Continue with `fd` (a new segment); the previous file must be durable."""
        cdef int new_fd = dup(fd)
        if new_fd < 0:
            raise OSError(errno, "dup of the journal segment failed")
        with nogil:
            pthread_mutex_lock(&self._lock)
            close(self._fd)
            self._fd = new_fd
            pthread_mutex_unlock(&self._lock)

    def stop(self):
        with nogil:
            pthread_mutex_lock(&self._lock)
            self._stop = True
            pthread_mutex_unlock(&self._lock)

    def run(self):
        """The thread's body: sleep, fsync what was written, repeat; no GIL inside."""
        cdef timespec ts
        cdef long long target
        cdef bint stop
        ts.tv_sec = self._interval_ns // 1_000_000_000
        ts.tv_nsec = self._interval_ns % 1_000_000_000
        with nogil:
            while True:
                nanosleep(&ts, NULL)
                pthread_mutex_lock(&self._lock)
                stop = self._stop
                target = eng_fsync_load(&self._written)
                if target > eng_fsync_load(&self._synced):
                    # fsync under the lock: set_fd waits for it, so the descriptor stays valid
                    if fsync(self._fd) != 0:
                        self._failed = errno
                        stop = True
                    else:
                        eng_fsync_max(&self._synced, target)
                pthread_mutex_unlock(&self._lock)
                if stop:
                    break
