// Light and dark themes: the system's preference until the person picks one, then theirs.
const KEY = 'voice-agent-theme';

function stored() {
  try {
    return localStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function initTheme(button) {
  const system = window.matchMedia('(prefers-color-scheme: dark)');
  const apply = (theme) => {
    document.documentElement.dataset.theme = theme;
    button.setAttribute('aria-pressed', theme === 'dark' ? 'true' : 'false');
  };
  apply(stored() || (system.matches ? 'dark' : 'light'));
  system.addEventListener?.('change', (e) => {
    if (!stored()) apply(e.matches ? 'dark' : 'light');
  });
  button.addEventListener('click', () => {
    const next = document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark';
    try {
      localStorage.setItem(KEY, next);
    } catch {
      /* private mode: the choice lasts for this page */
    }
    apply(next);
  });
}
