"""Frame sources: picamera2, OpenCV (USB, RTSP/HTTP, video file), a folder of images."""
