"""The test suite, a package so that its helpers import as ``tests.rig`` from any test file
(pytest runs with ``--import-mode=importlib`` and the checkout root on ``sys.path``)."""
