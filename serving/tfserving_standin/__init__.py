"""A stand-in for TF Serving: its REST (and gRPC) protocol over real SavedModels.

The tests import it (`serving.tfserving_standin`) to drive the facade's TF Serving backends
without the real server; the compose smoke test builds it into an image
(the Dockerfile's `tfserving-standin` target) where the official `tensorflow/serving` image
cannot be pulled.
"""
