// The aam dashboard's script (placeholder: the dashboard replaces it).
"use strict";
