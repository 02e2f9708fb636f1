"""`make demo`: Azure ML's batch endpoint tutorials run locally with the batchfn CLI, in one
devhost: MNIST digits scored by scoring scripts (samples/mnist/demo.py), then tabular data
scored by an MLflow model without a script (samples/breast_cancer/demo.py).

    python -m samples.demo [--port 7071]
"""

from __future__ import annotations

import sys

from samples.breast_cancer.demo import CancerTutorial
from samples.mnist.demo import Tutorial, run_demo


def main(argv: list[str] | None = None) -> int:
    """Run both tutorials; returns the exit status."""
    return run_demo(argv, __doc__, [Tutorial, CancerTutorial])


if __name__ == "__main__":
    sys.exit(main())
