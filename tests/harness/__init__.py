"""The one harness for tests against the API server, exposed to every test module through
``tests/conftest.py`` (``pytest_plugins``):

- ``kube``: names, the tests' operator policy, ``wait_for`` on an observable signal, the CRD
  installed, ``Kube`` (plain-dict reads and writes, as the operator itself does) and ``condition``;
- ``operators``: the operator in the tests' process on ``kopf.testing.KopfRunner``, and as a process
  of its own (``tablerefresh operator``) for restart, log and /metrics tests;
- ``fixtures``: the pytest fixtures over both (``kube``, ``crd``, ``operator``, ``operator_process``).
"""
