"""P-ZONE model tier: the BentoML service that serves the champion tilt classifier (ONNX Runtime)."""
