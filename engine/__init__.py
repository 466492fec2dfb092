"""Lottery Lab engine: find sparse trainable subnetworks with concave mask
regularization (Fracastoro et al., 2024) and with iterative magnitude pruning.

Plain Python + PyTorch; never imports Streamlit.
"""

__version__ = "0.1.0"
