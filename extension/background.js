// covertune's service worker: on first install, open the options page so the profile gets filled in.
chrome.runtime.onInstalled.addListener(function (details) {
  if (details.reason === chrome.runtime.OnInstalledReason.INSTALL) {
    chrome.storage.local.get("profile").then(function (stored) {
      if (!stored.profile) chrome.runtime.openOptionsPage();
    });
  }
});
