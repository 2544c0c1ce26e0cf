"""Lambda handlers (stdlib + boto3, plus shoplake.events where they judge order events); run locally by
``shoplake.lambda_local``, deployed as zips built from ``infra/resources.yaml``."""
