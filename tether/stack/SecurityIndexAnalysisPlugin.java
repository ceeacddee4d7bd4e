// The four analysis components the `.security` index's settings name (an `email` analyzer:
// tokenizer `uax_url_email`, filters `pattern_capture`, `lowercase`, `unique`), of which the
// integ-test-zip distribution has only `lowercase`: Elasticsearch's analysis-common module, which
// has them all, is not published to Maven Central. Each is Lucene's own class from the
// distribution's lib/lucene-analysis-common jar; this file only registers them under those names.
// Built at `tether stack up --secure` with javac against the distribution's lib/ (see
// tether/stack/secure_elasticsearch_plugin.py); docs/secure-stack.md says why and how it differs.
package dev.tether.securityindexanalysis;

import java.util.List;
import java.util.Map;
import java.util.regex.Pattern;
import org.apache.lucene.analysis.TokenStream;
import org.apache.lucene.analysis.Tokenizer;
import org.apache.lucene.analysis.email.UAX29URLEmailTokenizer;
import org.apache.lucene.analysis.miscellaneous.RemoveDuplicatesTokenFilter;
import org.apache.lucene.analysis.pattern.PatternCaptureGroupTokenFilter;
import org.elasticsearch.index.analysis.AbstractTokenFilterFactory;
import org.elasticsearch.index.analysis.AbstractTokenizerFactory;
import org.elasticsearch.index.analysis.TokenFilterFactory;
import org.elasticsearch.index.analysis.TokenizerFactory;
import org.elasticsearch.indices.analysis.AnalysisModule.AnalysisProvider;
import org.elasticsearch.plugins.AnalysisPlugin;
import org.elasticsearch.plugins.Plugin;

public class SecurityIndexAnalysisPlugin extends Plugin implements AnalysisPlugin {
    @Override
    public Map<String, AnalysisProvider<TokenFilterFactory>> getTokenFilters() {
        AnalysisProvider<TokenFilterFactory> patternCapture = (index, environment, name, settings) -> {
            List<String> patterns = settings.getAsList("patterns");
            boolean preserveOriginal = settings.getAsBoolean("preserve_original", true);
            Pattern[] compiled = patterns.stream().map(Pattern::compile).toArray(Pattern[]::new);
            return new AbstractTokenFilterFactory(name, settings) {
                @Override
                public TokenStream create(TokenStream input) {
                    return new PatternCaptureGroupTokenFilter(input, preserveOriginal, compiled);
                }
            };
        };
        // analysis-common's `unique` drops repeats anywhere in the stream; Lucene's filter drops
        // repeats at one position, which is where the email analyzer's captures land.
        AnalysisProvider<TokenFilterFactory> unique = (index, environment, name, settings) ->
            new AbstractTokenFilterFactory(name, settings) {
                @Override
                public TokenStream create(TokenStream input) {
                    return new RemoveDuplicatesTokenFilter(input);
                }
            };
        return Map.of("pattern_capture", AnalysisPlugin.requiresAnalysisSettings(patternCapture), "unique", unique);
    }

    @Override
    public Map<String, AnalysisProvider<TokenizerFactory>> getTokenizers() {
        AnalysisProvider<TokenizerFactory> uaxUrlEmail = (index, environment, name, settings) ->
            new AbstractTokenizerFactory(index, settings, name) {
                @Override
                public Tokenizer create() {
                    return new UAX29URLEmailTokenizer();
                }
            };
        return Map.of("uax_url_email", uaxUrlEmail);
    }
}
