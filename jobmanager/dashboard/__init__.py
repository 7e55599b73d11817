"""The dashboard's server side: the hardened Voila server, its kernels' extension, and downloads."""
