"""
ViCrop on numpy and torch only: saliency maths, box search, crop geometry, the pipeline.

Nothing here imports ROS or transformers (``test/test_layering.py`` keeps it so).
"""
