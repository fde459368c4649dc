# The descriptor holder (included by linux.pyx): a thread with a descriptor table of its own,
# where the kernel parks what it keeps open per agent (includes/fd_holder.h says how and why).

cdef extern from "includes/fd_holder.h" nogil:
    enum:
        AO_HOLDER_HOLD
        AO_HOLDER_ARM
        AO_HOLDER_DROP
        AO_HOLDER_HELLO
        AO_HOLDER_READY
        AO_HOLDER_DROPPED
        AO_HOLDER_REFUSED
        AO_HOLDER_FIRST_SLOT
    unsigned int AO_HOLDER_GIVE_BACK
    int ao_holder_start(int sock)

HOLDER_HOLD = AO_HOLDER_HOLD
HOLDER_ARM = AO_HOLDER_ARM
HOLDER_DROP = AO_HOLDER_DROP
HOLDER_HELLO = AO_HOLDER_HELLO
HOLDER_READY = AO_HOLDER_READY
HOLDER_DROPPED = AO_HOLDER_DROPPED
HOLDER_REFUSED = AO_HOLDER_REFUSED
HOLDER_FIRST_SLOT = AO_HOLDER_FIRST_SLOT
HOLDER_GIVE_BACK = AO_HOLDER_GIVE_BACK


def start_fd_holder(int sock):
    """Start the holder thread on ``sock``, its end of a SOCK_SEQPACKET socketpair. It copies
    this process's descriptor table, keeps only ``sock`` (as its number 0) and says HELLO:
    close this process's copy of ``sock`` after that, not before."""
    cdef int err = ao_holder_start(sock)
    if err != 0:
        raise _error(err, "start the descriptor holder thread")
