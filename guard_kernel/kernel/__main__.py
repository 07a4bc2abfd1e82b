"""``python -I -m guard_kernel.kernel``: the guarded kernel's process (see :mod:`guard_kernel.kernel.app`)."""

from guard_kernel.kernel.app import main

if __name__ == "__main__":
    main()
