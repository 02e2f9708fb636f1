"""Reports what it runs with, one row per input: file, interpreter, numpy, pandas and
tabulate versions (tabulate: None where it is not installed)."""

import os
import sys


def init():
    print(f"versions init in {sys.executable}")


def run(mini_batch):
    import numpy
    import pandas

    try:
        import tabulate

        tabulate_version = tabulate.__version__
    except ImportError:
        tabulate_version = None
    return pandas.DataFrame({
        "file": [os.path.basename(path) for path in mini_batch],
        "python": sys.executable, "prefix": sys.prefix, "numpy": numpy.__version__,
        "pandas": pandas.__version__, "tabulate": tabulate_version,
        "user_site": str(sys.flags.no_user_site), "isolated": str(sys.flags.isolated),
    })
