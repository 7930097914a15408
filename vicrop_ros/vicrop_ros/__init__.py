"""
vicrop_ros: ViCrop (training-free zoom on small visual details) as a ROS 2 perception node.

Layers, with dependencies pointing inward (``ros -> models -> core``):

* :mod:`vicrop_ros.core`: the algorithm on numpy and torch only.
* :mod:`vicrop_ros.models`: one adapter per multimodal LLM family (transformers, never rclpy).
* :mod:`vicrop_ros.ros`: the node; the only layer that imports rclpy and message types.
"""

__version__ = '0.1.0'
