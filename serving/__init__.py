"""The ranking service: FastAPI over ONNX Runtime, with a shared feature state and A/B tests.

``app.create_app`` builds the app; ``service.Service`` holds what requests need (models, the
live feature state, the experiment, the logs); ``routers/`` has one module per resource.
"""
