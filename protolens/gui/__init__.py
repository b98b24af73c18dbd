"""The desktop GUI (PySide6 + pyqtgraph): the only package that imports Qt. It never imports torch itself."""
