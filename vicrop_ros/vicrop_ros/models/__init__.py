"""
Model adapters: one small module per multimodal LLM family behind one protocol.

May import transformers; never rclpy or message packages (``test/test_layering.py`` keeps it so).
"""
