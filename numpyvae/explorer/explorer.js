// numpyvae-explorer placeholder
