"""Pure-data layer: image I/O, types, thresholds, metrics, file formats, job primitives.

Depends on numpy, Pillow, tifffile, OpenCV and the standard library only: never on torch or Qt.
"""
