"""The demo: a throwaway slapd with a demo organisation, and `offboarding demo`.

A development tool and the test suite's directory peer; not part of the installed service.
"""
