//! DMInstaller: the first program run on a device from a client deployment folder.
