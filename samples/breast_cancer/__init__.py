"""Azure ML's MLflow batch tutorial (tabular data, no scoring script) as a batchfn sample.

Azure ML's tutorial scores a heart-disease classifier from a folder of CSV files; this
sample uses scikit-learn's bundled breast cancer data set (no download), with a committed
MLflow model (`deployment-mlflow/model/`), CSV and parquet inputs made by
`prepare_data.py`, and `accuracy.py` to score an output file against the labels.
"""
