"""The agentos kernel daemon: reactor, dispatch, syscall table and core syscalls."""
