"""The frame path: capture -> preprocess -> student -> label scores -> observation -> store,
publish. runtime.Runtime assembles it once; the dry run, the service and `retrofit-agent bench`
all run that one assembly."""
