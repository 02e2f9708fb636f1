#!/usr/bin/env bash
# The Azure CLI tab of Azure ML's batch-endpoint tutorial ("Deploy models for scoring in batch
# endpoints", mnist-classifier), line by line with `az ml` replaced by `batchfn`; the lines of
# the examples repository's script that follow a job (stream, status, download, list-jobs)
# come where that script has them. Nothing else changed: the same YAML files, the same names,
# the same public input URL.
#
# Run it from samples/mnist/ against a batchfn (BATCHFN_URL, or the local devhost). The input
# URL is Azure's public sample folder: batchfn reads only its own datastores, so the app
# needs an input alias that gives that URL a local meaning (docs/tutorial.md shows how):
#   BATCHFN_INPUT_ALIASES="https://azuremlexampledata.blob.core.windows.net/data/mnist/sample=azureml:mnist-sample@latest"
# after `batchfn data create --name mnist-sample --path data/sample`.
# tests/e2e/test_tutorial_cli.py runs this file as it is.
set -euo pipefail

# Create compute
batchfn compute create -n batch-cluster --type amlcompute --min-instances 0 --max-instances 5

# Create a batch endpoint
ENDPOINT_NAME="mnist-batch"
batchfn batch-endpoint create --file endpoint.yml  --name $ENDPOINT_NAME

# Create a batch deployment: register the model, then deploy it as the default
MODEL_NAME='mnist-classifier-torch'
batchfn model create --name $MODEL_NAME --type "custom_model" --path "deployment-torch/model"
batchfn batch-deployment create --file deployment-torch/deployment.yml --endpoint-name $ENDPOINT_NAME --set-default

# Check batch endpoint and deployment details
DEPLOYMENT_NAME="mnist-torch-dpl"
batchfn batch-deployment show --name $DEPLOYMENT_NAME --endpoint-name $ENDPOINT_NAME

# Run batch endpoints and access results
JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --input https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --input-type uri_folder --query name -o tsv)

# Monitor batch job execution progress
batchfn job show -n $JOB_NAME --web
batchfn job stream -n $JOB_NAME
STATUS=$(batchfn job show -n $JOB_NAME --query status -o tsv)
echo $STATUS

# Check batch scoring results
batchfn job download --name $JOB_NAME --output-name score --download-path ./

# Configure the output location
OUTPUT_FILE_NAME=predictions_`echo $RANDOM`.csv
OUTPUT_PATH="azureml://datastores/workspaceblobstore/paths/$ENDPOINT_NAME"

JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --input https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --output-path $OUTPUT_PATH --set output_file_name=$OUTPUT_FILE_NAME --query name -o tsv)
batchfn job stream -n $JOB_NAME

# Overwrite deployment configuration for each job
JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --input https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --mini-batch-size 20 --instance-count 5 --query name -o tsv)
batchfn job stream -n $JOB_NAME

# Add a second deployment, not the default
batchfn batch-deployment create --file deployment-keras/deployment.yml --endpoint-name $ENDPOINT_NAME

# Test a non-default batch deployment
DEPLOYMENT_NAME="mnist-keras-dpl"
JOB_NAME=$(batchfn batch-endpoint invoke --name $ENDPOINT_NAME --deployment-name $DEPLOYMENT_NAME --input https://azuremlexampledata.blob.core.windows.net/data/mnist/sample --input-type uri_folder --query name -o tsv)
batchfn job stream -n $JOB_NAME
batchfn batch-deployment list-jobs --name $DEPLOYMENT_NAME --endpoint-name $ENDPOINT_NAME --query [].name

# Update the default batch deployment
batchfn batch-endpoint update --name $ENDPOINT_NAME --set defaults.deployment_name=$DEPLOYMENT_NAME
batchfn batch-endpoint show --name $ENDPOINT_NAME --query "{Name:name, Defaults:defaults}"

# Delete the batch endpoint and the deployment
batchfn batch-deployment delete --name mnist-torch-dpl --endpoint-name $ENDPOINT_NAME --yes
batchfn batch-endpoint delete --name $ENDPOINT_NAME --yes
