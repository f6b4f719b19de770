"""The mechanisms being compared: pure torch modules, no Lightning, no config objects."""
