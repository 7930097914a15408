"""One recipe module per family, named as in ``models.registry``: ``build(size)`` and ``HUB``."""
