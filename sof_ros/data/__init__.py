"""Episode datasets on disk (HDF5) and the tools that write them."""
