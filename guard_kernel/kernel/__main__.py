"""``python -I -m guard_kernel.kernel``: the guarded kernel's launcher (see :mod:`guard_kernel.kernel.launcher`)."""

from guard_kernel.kernel.launcher import main

if __name__ == "__main__":
    main()
