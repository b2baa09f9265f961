"""varpd_plugins: the lookup backends shipped with varpd, found through entry points."""
