# Big-endian load/store helpers shared by the binary codecs (ITCH, OUCH/SoupBinTCP).
# Header-only: every function is `static inline` C, so cimporting this .pxd costs
# nothing at run time and there is no wire.pyx. None of these check lengths: the
# caller has already checked that [p, p + width) lies inside its buffer.
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #if defined(__GNUC__) || defined(__clang__)
    #define CORE_EXT_BSWAP16(x) __builtin_bswap16(x)
    #define CORE_EXT_BSWAP32(x) __builtin_bswap32(x)
    #define CORE_EXT_BSWAP64(x) __builtin_bswap64(x)
    #else
    #define CORE_EXT_BSWAP16(x) ((uint16_t)((((x) & 0xFFu) << 8) | (((x) >> 8) & 0xFFu)))
    static inline uint32_t CORE_EXT_BSWAP32(uint32_t x) {
        return ((x & 0xFFu) << 24) | ((x & 0xFF00u) << 8) | ((x >> 8) & 0xFF00u) | (x >> 24);
    }
    static inline uint64_t CORE_EXT_BSWAP64(uint64_t x) {
        return ((uint64_t)CORE_EXT_BSWAP32((uint32_t)x) << 32)
               | CORE_EXT_BSWAP32((uint32_t)(x >> 32));
    }
    #endif
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define CORE_EXT_BE16(x) (x)
    #define CORE_EXT_BE32(x) (x)
    #define CORE_EXT_BE64(x) (x)
    #else
    #define CORE_EXT_BE16(x) CORE_EXT_BSWAP16(x)
    #define CORE_EXT_BE32(x) CORE_EXT_BSWAP32(x)
    #define CORE_EXT_BE64(x) CORE_EXT_BSWAP64(x)
    #endif
    static inline uint16_t wire_get_u16(const unsigned char *p) {
        uint16_t v; memcpy(&v, p, 2); return (uint16_t)CORE_EXT_BE16(v);
    }
    static inline uint32_t wire_get_u32(const unsigned char *p) {
        uint32_t v; memcpy(&v, p, 4); return CORE_EXT_BE32(v);
    }
    static inline uint64_t wire_get_u64(const unsigned char *p) {
        uint64_t v; memcpy(&v, p, 8); return CORE_EXT_BE64(v);
    }
    /* 6-byte big-endian unsigned (ITCH nanosecond timestamps). */
    static inline uint64_t wire_get_u48(const unsigned char *p) {
        return ((uint64_t)wire_get_u16(p) << 32) | (uint64_t)wire_get_u32(p + 2);
    }
    static inline void wire_put_u16(unsigned char *p, uint16_t v) {
        v = (uint16_t)CORE_EXT_BE16(v); memcpy(p, &v, 2);
    }
    static inline void wire_put_u32(unsigned char *p, uint32_t v) {
        v = CORE_EXT_BE32(v); memcpy(p, &v, 4);
    }
    static inline void wire_put_u64(unsigned char *p, uint64_t v) {
        v = CORE_EXT_BE64(v); memcpy(p, &v, 8);
    }
    static inline void wire_put_u48(unsigned char *p, uint64_t v) {
        wire_put_u16(p, (uint16_t)(v >> 32)); wire_put_u32(p + 2, (uint32_t)v);
    }
    """
    uint16_t wire_get_u16(const unsigned char* p) noexcept nogil
    uint32_t wire_get_u32(const unsigned char* p) noexcept nogil
    uint64_t wire_get_u64(const unsigned char* p) noexcept nogil
    uint64_t wire_get_u48(const unsigned char* p) noexcept nogil
    void wire_put_u16(unsigned char* p, uint16_t v) noexcept nogil
    void wire_put_u32(unsigned char* p, uint32_t v) noexcept nogil
    void wire_put_u64(unsigned char* p, uint64_t v) noexcept nogil
    void wire_put_u48(unsigned char* p, uint64_t v) noexcept nogil


cdef inline bint wire_is_alpha(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # True when every byte is printable ASCII (0x20..0x7E): the "alpha" field type.
    cdef Py_ssize_t i
    for i in range(n):
        if p[i] < 0x20 or p[i] > 0x7E:
            return False
    return True


cdef inline Py_ssize_t wire_rstrip(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    # Length of an alpha field without its right padding (spaces).
    while n > 0 and p[n - 1] == 0x20:
        n -= 1
    return n


# A read-only view of a bytes-like argument (bytes directly, anything else through
# the buffer protocol), for the coarse Python -> C calls of the codecs.
cdef struct WireInput:
    const unsigned char* p     # first byte (never NULL, even when n == 0)
    Py_ssize_t n               # length in bytes
    bint held                  # `view` is held and must be released
    Py_buffer view             # the buffer view, when held

cdef extern from *:
    """
    static const unsigned char wire_empty_input[1] = {0};
    """
    const unsigned char wire_empty_input[1]


cdef inline int wire_input_open(object data, WireInput* r) except -1:
    # Release with wire_input_close (in a finally) once done with r.p.
    if type(data) is bytes:
        r.held = False
        r.n = PyBytes_GET_SIZE(data)
        r.p = <const unsigned char*>PyBytes_AS_STRING(data)
        return 0
    PyObject_GetBuffer(data, &r.view, PyBUF_SIMPLE)
    r.held = True
    r.n = r.view.len
    r.p = <const unsigned char*>r.view.buf if r.view.buf != NULL else wire_empty_input
    return 0


cdef inline void wire_input_close(WireInput* r) noexcept:
    if r.held:
        r.held = False
        PyBuffer_Release(&r.view)
