"""Lambda handlers (stdlib + boto3 only, each file deployable alone as a zip); run locally by ``shoplake.lambda_local``."""
