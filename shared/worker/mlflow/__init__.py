"""batchfn's built-in scorer for MLflow models: what Azure ML runs for an MLflow model
deployed without a scoring script.

`scorer.py` loads the model with `mlflow.pyfunc` and scores files or rows;
`batch_driver.py` is the scoring script (init()/run()) that the worker runs in place of a
user's. (Deployment create checks the `MLmodel` file without importing MLflow:
shared/contract/mlmodel.py.)
"""
