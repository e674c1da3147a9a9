/* chart.c - the SVG line chart of the measuring tools (chart.h). */
#include "chart.h"

#include <math.h>
#include <stdio.h>

static void xml_text(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else
            fputc(*s, f);
    }
}

int rec_chart_svg(const char *path, const char *title, const char *xlabel,
                  const rec_chart_line *lines, size_t nlines) {
    static const char *const palette[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    const double W = 760, H = 420, L = 60, R = 210, T = 40, B = 50;
    double ymax = 0;
    for (size_t i = 0; i < nlines; i++)
        for (size_t d = 0; d < lines[i].n; d++)
            if (lines[i].y[d] > ymax)
                ymax = lines[i].y[d];
    double step = ymax > 0.2 ? 0.05 : ymax > 0.08 ? 0.02 : 0.01;
    ymax = ceil(ymax / step + 1e-9) * step;
    if (ymax <= 0)
        ymax = step;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n"
               "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
               "<text x=\"%.0f\" y=\"24\" font-size=\"15\">",
            W, H, L);
    xml_text(f, title);
    fputs("</text>\n", f);
    double pw = W - L - R, ph = H - T - B;
    for (double y = 0; y <= ymax + 1e-9; y += step) {
        double py = T + ph - y / ymax * ph;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.2f</text>\n",
                L, py, L + pw, py, L - 6, py + 4, y);
    }
    for (int d = 0; d <= 10; d += 2)
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%d%%</text>\n",
                L + pw * d / 10.0, T + ph + 18, d * 10);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
               "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\"/>\n"
               "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">",
            L, T + ph, L + pw, T + ph, L, T, L, T + ph, L + pw / 2, H - 12);
    xml_text(f, xlabel);
    fputs("</text>\n", f);
    size_t next = 0;
    for (size_t i = 0; i < nlines; i++) {
        const rec_chart_line *ln = &lines[i];
        const char *c = ln->colour ? ln->colour : palette[next++ % 10];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"%s\"%s points=\"", c,
                ln->dashed ? "1.5" : "2", ln->dashed ? " stroke-dasharray=\"6,4\"" : "");
        for (size_t d = 0; d < ln->n; d++)
            fprintf(f, "%s%.1f,%.1f", d ? " " : "", L + pw * ((double)d + 0.5) / (double)ln->n,
                    T + ph - ln->y[d] / ymax * ph);
        fprintf(f, "\"/>\n<rect x=\"%.1f\" y=\"%.1f\" width=\"14\" height=\"3\" fill=\"%s\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\">",
                L + pw + 16, T + 10 + 18.0 * (double)i, c, L + pw + 36, T + 14 + 18.0 * (double)i);
        xml_text(f, ln->label);
        xml_text(f, ln->suffix);
        fputs("</text>\n", f);
    }
    fprintf(f, "</svg>\n");
    return fclose(f) ? -1 : 0;
}
