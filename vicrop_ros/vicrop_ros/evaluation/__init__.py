"""
Measuring that ViCrop helps: the VQA accuracy, synthetic question sets, ``vicrop eval``.

Imports the model layer and the core, never ROS.
"""
