package plot

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// pageState is what the page reports in window.siftrPlot, and a few counts
// of its DOM.
type pageState struct {
	Ready      bool     `json:"ready"`
	Flows      int      `json:"flows"`
	Series     int      `json:"series"`
	Charts     int      `json:"charts"`
	Errors     []string `json:"errors"`
	DataSeries string   `json:"dataSeries"`
	Canvases   int      `json:"canvases"`
	Decimated  int      `json:"decimated"`
}

// chromiumPath finds Chromium, or skips (fails under CI=true).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, p := range []string{os.Getenv("CHROMIUM"), "/usr/bin/chromium", "chromium", "chromium-browser"} {
		if p == "" {
			continue
		}
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium not found: CI must install it (apt-get install chromium); the HTML page is tested in it")
	}
	t.Skip("chromium not found (apt-get install chromium): the HTML page is not tested in a browser")
	return ""
}

// openInChromium loads the file in headless Chromium, waits until the
// page is ready, and returns its state and the console errors.
func openInChromium(t *testing.T, file string) (pageState, []string) {
	t.Helper()
	path := chromiumPath(t)
	actx, cancel := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path), chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	defer cancel()
	ctx, cancel2 := chromedp.NewContext(actx)
	defer cancel2()
	if err := chromedp.Do(ctx); err != nil { // start the browser and open the tab
		t.Fatalf("start chromium: %v", err)
	}
	var mu sync.Mutex
	var console []string
	if err := chromedp.Listen(ctx, func(ev any) {
		mu.Lock()
		defer mu.Unlock()
		switch e := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeAssert {
				var parts []string
				for _, a := range e.Args {
					parts = append(parts, string(a.Value)+a.Description)
				}
				console = append(console, strings.Join(parts, " "))
			}
		case *runtime.EventExceptionThrown:
			msg := e.ExceptionDetails.Text
			if e.ExceptionDetails.Exception != nil {
				msg += " " + e.ExceptionDetails.Exception.Description
			}
			console = append(console, msg)
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError {
				console = append(console, e.Entry.Text+" "+e.Entry.URL)
			}
		}
	}); err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
	defer tcancel()
	if err := chromedp.Do(tctx, chromedp.Navigate("file://"+file)); err != nil {
		t.Fatalf("open the page: %v", err)
	}
	st, err := chromedp.Run(tctx, chromedp.Poll[pageState](`window.siftrPlot && window.siftrPlot.ready && Object.assign({}, window.siftrPlot, {
		dataSeries: document.body.dataset.series,
		canvases: document.querySelectorAll("canvas").length,
		decimated: document.querySelectorAll(".decimated").length})`, chromedp.WithPollingTimeout(10*time.Second)))
	if err != nil {
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("page not ready: %v; console: %q", err, console)
	}
	mu.Lock()
	defer mu.Unlock()
	return st, append([]string(nil), console...)
}
