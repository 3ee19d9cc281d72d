from tests.support.observer import open_camera

__all__ = ["open_camera"]
