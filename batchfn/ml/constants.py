"""The constants of azure-ai-ml's batch surface that notebooks use (`azure.ai.ml.constants`)."""

from __future__ import annotations


class AssetTypes:
    """Input and model types, spelled as Azure ML spells them."""

    URI_FILE = "uri_file"
    URI_FOLDER = "uri_folder"
    MLTABLE = "mltable"
    CUSTOM_MODEL = "custom_model"
    MLFLOW_MODEL = "mlflow_model"
    TRITON_MODEL = "triton_model"


class BatchDeploymentOutputAction:
    """What a deployment does with the `run()` returns."""

    APPEND_ROW = "append_row"
    SUMMARY_ONLY = "summary_only"
