"""
zotwist: an OCI distribution-spec registry on Twisted that stores its content
in the OCI image layout and reads zot's configuration file.
"""

__version__ = "0.1.0"

#: The version of the OCI distribution-spec this registry implements.
DIST_SPEC_VERSION = "1.1.1"
