import {Platform, createNavigation, createRouter, RootViewModel, FeatureSet} from "hydrogen-view-sdk";

async function main() {
    const config = await (await fetch("config.json", {cache: "no-store"})).json();
    const assetPaths = {
        downloadSandbox: "assets/download-sandbox.html",
        worker: "assets/main.js",
        olm: {wasm: "olm/olm.wasm", legacyBundle: "olm/olm_legacy.js", wasmBundle: "olm/olm.js"},
        serviceWorker: "sw.js",
    };
    const container = document.getElementById("app");
    const platform = new Platform({container, assetPaths, config, options: {development: false}});
    const navigation = createNavigation();
    platform.setNavigation(navigation);
    if (platform.init) await platform.init();
    const urlRouter = createRouter({navigation, history: platform.history});
    urlRouter.attach();
    const features = await FeatureSet.load(platform.settingsStorage);
    const vm = new RootViewModel({platform, navigation, urlRouter, features});
    await vm.load();
    platform.createAndMountRootView(vm);
}

main().catch(error => {
    document.body.textContent = `The web client could not start: ${error}`;
    console.error(error);
});
