"""attnbench.data"""
