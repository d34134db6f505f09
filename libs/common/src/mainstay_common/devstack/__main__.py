"""``python -m mainstay_common.devstack``: see :mod:`mainstay_common.devstack._cli`."""

from mainstay_common.devstack._cli import main

__all__: list[str] = []

if __name__ == "__main__":
    main()
