"""Python client for model-server (gRPC). See clients/python/README.md."""
from modelserver_client.client import ModelServerClient, Prediction, ServerError

__all__ = ["ModelServerClient", "Prediction", "ServerError"]
