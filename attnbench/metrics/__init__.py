"""attnbench.metrics"""
