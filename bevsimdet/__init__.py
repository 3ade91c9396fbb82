"""bevsimdet: simulated multi-modal distillation in BEV for camera-only 3D object detection."""

__version__ = "0.1.0"
