# The CPython C-API agentos._fast uses that Cython's cpython package does not declare.

cdef extern from "Python.h":
    # The interpreter's fork hooks (os.register_at_fork), for a fork made by a raw syscall.
    void PyOS_BeforeFork()
    void PyOS_AfterFork_Parent()
    void PyOS_AfterFork_Child()

    # Walking the interpreter's threads: whether a GIL release could let another one run.
    ctypedef struct PyInterpreterState
    ctypedef struct PyThreadState
    PyInterpreterState *PyInterpreterState_Get()
    PyThreadState *PyInterpreterState_ThreadHead(PyInterpreterState *interp)
    PyThreadState *PyThreadState_Next(PyThreadState *tstate)
