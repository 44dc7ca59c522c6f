"""The dependency UI: the message-bar offer to install, the installer and diagnostics dialogs, and the device
badge with the background check that fills it in (:mod:`.badge`, which imports no dialog)."""
