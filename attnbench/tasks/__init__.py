"""attnbench.tasks"""
