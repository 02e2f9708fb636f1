"""batchfn's built-in scorer for MLflow models: what Azure ML runs for an MLflow model
deployed without a scoring script.

`mlmodel.py` reads an `MLmodel` file without importing MLflow (for deployment checks in
the API process); `scorer.py` loads the model with `mlflow.pyfunc` and scores files or
rows; `batch_driver.py` is the scoring script (init()/run()) that the worker runs in
place of a user's.
"""
