"""Starts bash_kernel's kernel without pexpect's pause before each write.

pexpect waits 50 ms before every line it sends to a child, a guard for
children that have not turned their terminal echo off yet. bash_kernel
starts bash with echo already off and then sends it some 40 lines of set-up,
so the pause alone made every bash kernel take two seconds to start, and
every cell 50 ms longer per line. The kernel is otherwise bash_kernel's own.

kernel.json: ``python -m hutch_bash_kernel -f {connection_file}``.
"""

from typing import Any

import pexpect


# pexpect's stubs make spawn generic in what it reads (str, as bash_kernel passes an
# encoding); pexpect itself cannot be subscripted at run time.
class _Spawn(pexpect.spawn):  # type: ignore[type-arg]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.delaybeforesend = None


def main() -> None:
    """Runs the kernel in this process until it is shut down."""
    import bash_kernel.kernel
    from ipykernel.kernelapp import IPKernelApp

    # bash_kernel calls pexpect.spawn through its own module reference.
    bash_kernel.kernel.pexpect.spawn = _Spawn
    IPKernelApp.launch_instance(kernel_class=bash_kernel.kernel.BashKernel)


if __name__ == "__main__":
    main()
