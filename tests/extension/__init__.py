"""A toy Anchor and a toy dataset, registered from outside the package
(``tests/test_registry.py``): what a researcher adding their own writes."""
