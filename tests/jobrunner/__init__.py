"""The Job runner: the test control plane's stand-in for the CronJob controller, the Job controller
and the kubelet (see README.md beside this file)."""
